"""The on-disk contract of an experiment folder: layout, control schema, the one control-file writer, node records, atomic files. No TensorFlow."""
