"""The filesystem: workspace versions, tree I/O and the scratch tmpfs."""
