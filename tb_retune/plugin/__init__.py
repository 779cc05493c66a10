"""The Retune tab: TensorBoard plugin (routes) and its light entry-point loader."""
