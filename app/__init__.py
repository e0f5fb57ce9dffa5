"""The draw-a-digit application: a local web page (`app.webapp`, `python -m app`) and the notebook canvas
(`app.canvas`), both around `app.recognizer.Recognizer`. An application, not a lesson: it lives outside `utils`."""
