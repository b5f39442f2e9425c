"""Raw sources → validated canonical tables → unified profile → behavioural features in Feast."""
