"""Policy bundles and the Cedar engine that evaluates them."""
