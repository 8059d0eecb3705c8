"""A Python spec whose import fails (the loader must turn this into one SpecError line)."""

raise RuntimeError("boom\nsecond line")
