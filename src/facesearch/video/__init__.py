"""Video files at the imaging layer: opening them (allow-listed FFmpeg demuxers), decoding
frames, finding cuts, tracking faces, and scanning a whole video (below the services, so that
both the video jobs and the Ray tasks of :mod:`facesearch.services.cluster` use it)."""
