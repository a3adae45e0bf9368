"""Small command-line clients for trying the server by hand."""
