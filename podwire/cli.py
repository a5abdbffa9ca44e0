def main() -> None:
    print("podwire")
