"""An S3-compatible API over the file service (see :mod:`gateway.s3.app`)."""
