from tfp_mlflow.cli import main

main()
