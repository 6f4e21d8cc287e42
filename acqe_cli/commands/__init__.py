"""One module per `acqe` sub-command; each defines a click command named `command`."""
