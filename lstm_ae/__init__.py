"""LSTM autoencoders for sequences: data, model, training and forecasting, in PyTorch alone.

Everything here works from a notebook, with no Ray involved::

    from lstm_ae.data import synthetic
    from lstm_ae.model import LSTMAutoencoder
    from lstm_ae.train import fit

    splits = synthetic.load(n=1000)
    model = LSTMAutoencoder(input_size=1, hidden_size=16)
    for metrics in fit(model, splits, epochs=3, batch_size=64, lr=1e-2):
        print(metrics)
"""
