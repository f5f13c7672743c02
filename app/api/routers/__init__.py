"""One router per concern; create_app includes every module here that defines `router`."""
