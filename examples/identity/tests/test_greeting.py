"""The unit test that examples/identity's workflow runs."""

import unittest


class GreetingTest(unittest.TestCase):
    def test_title_case(self) -> None:
        self.assertEqual("hello, world".title(), "Hello, World")


if __name__ == "__main__":
    unittest.main()
