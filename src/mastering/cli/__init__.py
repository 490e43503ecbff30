"""The ``mastering`` command: the local stack, a client of the HTTP API, local
mastering, and the MasterMatcherVST plugin's stdin/stdout backend."""
