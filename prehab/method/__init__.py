"""The method, one module per step: calibrate (whitening), prehab (the regularised fine-tuning
and its spaces), surrogates (the rank penalties), compress (SVD / SVD-LLM surgery), rehab (LoRA
recovery), evaluate (task metric and size). docs/method.md explains each choice."""
