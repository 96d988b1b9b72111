"""The PnasEval operator: kopf handlers that create, watch and summarise Jobs; never a stage's work."""
