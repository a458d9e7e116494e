"""The local web gallery (`clipsearch serve`): search, look, pick, download as a ZIP."""
