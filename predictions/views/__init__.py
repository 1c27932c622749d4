"""HTTP views: pages for people, the JSON API for scripts, health and metrics for operators."""
