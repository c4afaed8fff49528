"""A stand-in for the AIMO3 competition's ``kaggle_evaluation`` package (see ``aimo_3_inference_server``)."""
