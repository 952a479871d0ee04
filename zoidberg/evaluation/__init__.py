"""External validation, calibration, operating points and the statistics behind them."""
