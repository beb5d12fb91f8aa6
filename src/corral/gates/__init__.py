"""Gates: one module per concern, composed into the pipeline by gates.base.compose."""
