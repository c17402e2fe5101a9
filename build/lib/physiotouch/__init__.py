"""physiotouch: self-supervised pretraining of tactile-video masked autoencoders (PhysioTouch Stage 1)."""

__version__ = "0.1.0"
