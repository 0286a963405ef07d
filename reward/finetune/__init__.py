"""Parameter-efficient fine-tuning: LoRA adapters (peft, an optional extra) and their merged export."""
