"""Settings precedence: defaults < config.toml < CLIPSEARCH_* environment < flags."""

from __future__ import annotations

import pytest

from clipsearch.config import load_settings
from clipsearch.errors import ClipsearchError
from clipsearch.model.spec import canonical


def test_defaults_then_toml_then_environment_then_flags(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert load_settings(home, env={}).max_pixels == 200_000_000
    (home / "config.toml").write_text('max_pixels = 1000\nworkers = 3\nexclude = ["*/tmp/*"]\n')
    settings = load_settings(home, env={})
    assert (settings.max_pixels, settings.workers, settings.exclude) == (1000, 3, ("*/tmp/*",))
    env = {"CLIPSEARCH_MAX_PIXELS": "2000", "CLIPSEARCH_EXTENSIONS": "jpg, .PNG"}
    settings = load_settings(home, env=env)
    assert settings.max_pixels == 2000 and settings.workers == 3
    assert settings.extensions == ("jpg", "png")
    assert load_settings(home, env=env, max_pixels=3000, workers=None).max_pixels == 3000


def test_the_home_comes_from_the_flag_then_the_environment(tmp_path):
    assert load_settings(tmp_path / "a", env={"CLIPSEARCH_HOME": str(tmp_path / "b")}).home == tmp_path / "a"
    assert load_settings(None, env={"CLIPSEARCH_HOME": str(tmp_path / "b")}).home == tmp_path / "b"


@pytest.mark.parametrize("toml, message", [("workers = 0", "workers"), ("colour = 1", "unknown setting"),
                                           ("workers = ", "not valid TOML"),
                                           ('image_precision = "int4"', "image_precision = 'int4' is not one of")])
def test_bad_settings_are_named(tmp_path, toml, message):
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ClipsearchError, match=message):
        load_settings(tmp_path, env={})


def test_model_names_are_made_canonical_without_loading_a_model(tmp_path):
    assert canonical("default") == "ViT-B-32-SigLIP2-256:webli"
    assert canonical("accurate") == "ViT-B-16-SigLIP2-256:webli"
    assert canonical("datacomp") == "ViT-B-32-256:datacomp_s34b_b86k"  # the default before
    assert canonical("openai") == canonical("ViT-B/32") == "ViT-B-32:openai"
    assert canonical("ViT-L/14@336px") == "ViT-L-14-336:openai"
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"")
    assert canonical(f"ViT-B-32:{checkpoint}") == f"ViT-B-32:{checkpoint}"
    assert canonical(str(checkpoint)) == str(checkpoint)
    with pytest.raises(ClipsearchError, match="checkpoint file not found"):
        canonical("ViT-B-32:/no/such/file.pt")


def test_every_image_precision_setting_has_a_tower_check():
    from clipsearch import config
    from clipsearch.model import imagetower

    assert set(config.PRECISIONS) == set(imagetower.MIN_COSINE)
