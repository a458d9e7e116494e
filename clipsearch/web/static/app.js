// clipsearch gallery: search without reloading, more on scroll, a large view, picking,
// "photos like this" for a dropped file. The server renders every piece of HTML.
"use strict";

const results = document.getElementById("results");
const viewer = document.getElementById("viewer");
const viewerBody = document.getElementById("viewer-body");
const selection = document.getElementById("selection");
const picked = new Map(); // id -> score ("" when unscored)

function showError(text) {
  const p = document.createElement("p");
  p.className = "message error";
  p.textContent = text;
  results.prepend(p);
}

async function fetchHtml(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error("The gallery is not answering: is `clipsearch serve` still running?");
  }
  const text = await response.text();
  if (!response.ok && !text.startsWith("<")) throw new Error(text);
  return text;
}

async function load(url, options, append) {
  try {
    const html = await fetchHtml(url, options);
    if (append) {
      document.querySelector(".more-row")?.remove();
      results.insertAdjacentHTML("beforeend", html);
    } else {
      results.innerHTML = html;
      window.scrollTo(0, 0);
    }
    syncPicks();
    watchMore();
  } catch (err) {
    showError(err.message);
  }
}

function search(q, like, part) {
  const params = new URLSearchParams();
  if (q) params.set("q", q);
  if (like) params.set("like", like);
  if (part) params.set("part", part);
  history.pushState(null, "", q ? "/?" + new URLSearchParams({ q }) : "/");
  document.querySelector('#download input[name="q"]').value = q || "";
  document.title = (q ? q + " · " : "") + "clipsearch";
  return load("/results?" + params.toString());
}

document.getElementById("search").addEventListener("submit", (event) => {
  event.preventDefault();
  search(document.getElementById("q").value.trim());
});

window.addEventListener("popstate", () => {
  const q = new URLSearchParams(location.search).get("q") || "";
  document.getElementById("q").value = q;
  if (q) load("/results?" + new URLSearchParams({ q }));
});

// More: a click, or the link scrolling into view.
let observer = null;
function watchMore() {
  observer?.disconnect();
  const more = document.querySelector("a.more");
  if (!more || !("IntersectionObserver" in window)) return;
  observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) {
      observer.disconnect();
      load(more.getAttribute("href"), undefined, true);
    }
  }, { rootMargin: "400px" });
  observer.observe(more);
}

results.addEventListener("click", async (event) => {
  const more = event.target.closest("a.more");
  if (more) {
    event.preventDefault();
    observer?.disconnect();
    return load(more.getAttribute("href"), undefined, true);
  }
  const open = event.target.closest("a.open");
  if (open) {
    event.preventDefault();
    return openPhoto(open.getAttribute("href"));
  }
});

// A picture the server will not give (the file is gone, or lies outside the library's
// folders through a link): the card says so instead of showing a broken image.
results.addEventListener("error", (event) => {
  if (event.target.tagName === "IMG") event.target.closest(".card")?.classList.add("missing");
}, true);

// The large view.
async function openPhoto(url) {
  try {
    viewerBody.innerHTML = await fetchHtml(url);
    part = null;
    if (!viewer.open) viewer.showModal();
  } catch (err) {
    showError(err.message);
  }
}

viewer.addEventListener("click", async (event) => {
  if (event.target === viewer || event.target.closest(".close")) return viewer.close();
  const similar = event.target.closest(".similar");
  if (similar) {
    viewer.close();
    document.getElementById("q").value = "";
    return search("", similar.dataset.id);
  }
  const partButton = event.target.closest(".similar-part");
  if (partButton && part) {
    viewer.close();
    document.getElementById("q").value = "";
    return search("", partButton.dataset.id, part);
  }
  const folder = event.target.closest(".open-folder");
  if (folder) {
    const response = await fetch("/open-folder/" + folder.dataset.id, { method: "POST" });
    if (!response.ok) showError(await response.text());
  }
});

// A region of the large view's photo as the query: drag a box, then "Photos like this part".
// The box is sent as shares of the picture's width and height (part=x,y,w,h), so it means the
// same region of the original, whatever size the view shows it at.
let part = null;
let dragStart = null;

function shownRect(img) {
  // The picture inside the img element (object-fit: contain leaves bands around it).
  const box = img.getBoundingClientRect();
  const scale = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight);
  const width = img.naturalWidth * scale, height = img.naturalHeight * scale;
  return { left: box.left + (box.width - width) / 2, top: box.top + (box.height - height) / 2, width, height };
}

function clamp(value) { return Math.min(1, Math.max(0, value)); }

viewer.addEventListener("pointerdown", (event) => {
  const img = event.target.closest(".photo .frame img");
  if (!img || !img.naturalWidth) return;
  event.preventDefault();
  const rect = shownRect(img);
  dragStart = { img, rect, x: clamp((event.clientX - rect.left) / rect.width), y: clamp((event.clientY - rect.top) / rect.height) };
  img.setPointerCapture(event.pointerId);
});

viewer.addEventListener("pointermove", (event) => {
  if (!dragStart) return;
  const { img, rect, x, y } = dragStart;
  const x2 = clamp((event.clientX - rect.left) / rect.width), y2 = clamp((event.clientY - rect.top) / rect.height);
  const left = Math.min(x, x2), top = Math.min(y, y2), width = Math.abs(x2 - x), height = Math.abs(y2 - y);
  const frame = img.parentElement.getBoundingClientRect();
  const box = img.parentElement.querySelector(".box");
  Object.assign(box.style, {
    left: rect.left - frame.left + left * rect.width + "px", top: rect.top - frame.top + top * rect.height + "px",
    width: width * rect.width + "px", height: height * rect.height + "px",
  });
  box.hidden = false;
  const big = width * rect.width >= 8 && height * rect.height >= 8;  // a click is not a region
  part = big ? [left, top, width, height].map((v) => v.toFixed(4)).join(",") : null;
  viewer.querySelector(".similar-part").hidden = !big;
});

viewer.addEventListener("pointerup", () => {
  if (dragStart && !part) dragStart.img.parentElement.querySelector(".box").hidden = true;
  dragStart = null;
});

// Picking photos for the ZIP.
function updateSelection() {
  selection.hidden = picked.size === 0;
  document.getElementById("picked").textContent = picked.size + " selected";
}

function syncPicks() {
  for (const card of results.querySelectorAll(".card")) {
    const box = card.querySelector("input[type=checkbox]");
    box.checked = picked.has(card.dataset.id);
    card.classList.toggle("picked", box.checked);
  }
  updateSelection();
}

results.addEventListener("change", (event) => {
  const box = event.target;
  if (box.type !== "checkbox") return;
  const card = box.closest(".card");
  if (box.checked) picked.set(card.dataset.id, card.dataset.score);
  else picked.delete(card.dataset.id);
  card.classList.toggle("picked", box.checked);
  updateSelection();
});

document.getElementById("select-all").addEventListener("click", () => {
  for (const card of results.querySelectorAll(".card")) picked.set(card.dataset.id, card.dataset.score);
  syncPicks();
});

document.getElementById("select-none").addEventListener("click", () => {
  picked.clear();
  syncPicks();
});

document.getElementById("download").addEventListener("submit", (event) => {
  const form = event.target;
  form.elements.ids.value = [...picked.keys()].join(",");
  const scores = {};
  for (const [id, score] of picked) if (score !== "") scores[id] = Number(score);
  form.elements.scores.value = JSON.stringify(scores);
});

// Drop a photo: photos like it (sent as the request's body, decoded in memory, never kept).
const drop = document.getElementById("drop");
let dragDepth = 0;
window.addEventListener("dragenter", (event) => {
  if (![...event.dataTransfer.types].includes("Files")) return;
  dragDepth += 1;
  drop.hidden = false;
});
window.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) drop.hidden = true;
});
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  drop.hidden = true;
  const file = event.dataTransfer.files[0];
  if (file) searchByImage(file);
});

function searchByImage(file) {
  const q = document.getElementById("q").value.trim();
  return load("/results" + (q ? "?" + new URLSearchParams({ q }) : ""),
              { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
}

watchMore();
