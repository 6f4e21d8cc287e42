"""`acqe` command-line interface: a thin click + rich shell over the libraries."""
