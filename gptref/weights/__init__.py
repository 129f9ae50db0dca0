"""Weights in other formats: Hugging Face GPT-2 safetensors (``hf``, both layouts checked in
``hf_layout``) and the book's ``model.pth`` state dicts (``pth``)."""
