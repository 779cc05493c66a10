"""What the plugin and the command line read: experiments through TensorBoard's data provider, the tree model."""
