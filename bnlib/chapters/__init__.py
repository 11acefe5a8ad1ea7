"""One module per chapter notebook, with the same stem: that chapter's experiment
runners and figures. Each imports the core library only, never another chapter; a
notebook imports its own as ``from bnlib.chapters import ch3_test_time as ch3``.
"""
