"""Where photos come from and how they become model input: walking folders (scan), watching
them (watch), decoding (decode) and the crawl pipeline (pipeline)."""
