"""Training: the emotion classifier and the face detector (`emocam train ...`)."""
