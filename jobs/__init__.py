"""Job entry points: each has a thin ``main(argv)``; the logic lives in ``xmc``."""
