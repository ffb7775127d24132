"""Images: decoding, checking and resizing one download, thumbnails from the cache for result
pages, and the generators that draw new images for feedback (A1111's API, diffusers). No
Prefect."""
