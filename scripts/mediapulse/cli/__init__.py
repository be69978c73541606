"""The `mediapulse` command."""
