"""The InterMimic student: refined references, batched teachers, DAgger -> PPO, DDP (spec 4.2, 8.2, 9).

Kept import-light: ``training.config`` embeds ``training.student.config``.
"""
