"""camera: read a video source, detect faces, publish each crop to the edge broker."""
