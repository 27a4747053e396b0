"""The ``geounet`` command line: thin click commands that parse options and call the library."""
