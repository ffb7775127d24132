"""The search page (``promptlake ui``): a long-lived process that keeps CLIP loaded and serves a
page and a JSON API over a data dir's store and image cache."""
