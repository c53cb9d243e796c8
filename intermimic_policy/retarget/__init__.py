"""Retargeting HOI motion to humanoid robot URDFs."""
