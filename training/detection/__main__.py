from training.detection.study import main

main()
