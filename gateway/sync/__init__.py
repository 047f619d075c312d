"""Background work: uploads and commits to the remote store, and the metadata backup loop."""
