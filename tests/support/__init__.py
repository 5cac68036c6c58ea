"""Builders of offline stand-ins for what full mode downloads (importable outside pytest).

hub_cache         a Hugging Face hub cache of tiny random weights under the real repo ids
tiny_insightface  tiny ONNX models that insightface routes as a buffalo_l detector and recognizer
"""
