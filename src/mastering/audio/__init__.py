"""Reading, measuring and writing audio: the numpy side of the master function."""
