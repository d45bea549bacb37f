"""One module per source; each defines `SOURCE` (see `sources.registry`)."""
