"""Face photos and face analysis.

images    turn any photo input into an upright RGB uint8 array, with errors that name the input
analyzer  FaceAnalyzer: detection, landmarks, identity embeddings (insightface or dlib)
photos    the public-domain photos shipped with the project

May import: fastface_lite.errors, numpy, PIL, dlib, insightface (not torch models of sdxl).
"""
