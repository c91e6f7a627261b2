"""Batch jobs over folders: the folder runner, prediction file formats, evaluation and sharding."""
