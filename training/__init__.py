"""Training: PPO teachers, distillation, evaluation and export, driven by run_pipeline.py."""
