"""The Zarr v3 activation/gradient cache: schema, writer, reader and verification."""
