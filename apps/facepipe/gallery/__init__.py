"""gallery: web pages and a JSON API over the face store, with live updates, roles and erasure."""
