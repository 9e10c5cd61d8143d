"""Container tests: the Dockerfile (static, in make test) and the image end to end (make image-e2e)."""
