"""deeppose-fast: DeepPose stage 1 (an AlexNet that regresses joint coordinates from a person crop).

Data flows one way: files -> datasets -> shards -> pipeline (+ native operator) -> model -> train loop
-> metrics -> tables, pictures and JSON. See docs/ARCHITECTURE.md.
"""
__version__ = "0.1.0"
