"""Features: image decoding, embedders and their nets, metadata encoders, colour."""
