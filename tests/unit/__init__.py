"""One module at a time (``tests/unit/<folder>/test_<module>.py`` mirrors
``faf_replay/<folder>/<module>.py``), with fakes, a fake clock or real sockets,
but no server process."""
