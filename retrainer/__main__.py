from retrainer.cli import main

# Guarded: multiprocessing children re-import the main module under another name.
if __name__ == "__main__":
    main()
