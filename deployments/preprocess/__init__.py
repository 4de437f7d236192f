"""Image decoding/resizing and CLIP tokenization. No torch: runs in the router and in jobs."""
